"""What every layer shares and none owns: where the checkout is, how database URLs are
spelled, and a lock that lets one process at a time create a store."""
