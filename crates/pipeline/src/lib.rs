#![doc = "stub"]
