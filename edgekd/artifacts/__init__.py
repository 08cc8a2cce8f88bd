"""What stages write: an artifact record (a folder or file plus its JSON), an ONNX model's files on disk, and
the run directory that holds them (the contract with report, gate and CI)."""
