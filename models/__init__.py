"""The contract shared by training and serving: schemas, feature lists, decision rules, registry."""
