"""The Open Inference Protocol (KServe V2) over REST and gRPC, built from the model catalog."""
