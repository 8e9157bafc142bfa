"""What every layer shares and none owns: where the checkout is, how database URLs are spelled."""
