"""What stages write: an artifact record (a folder or file plus its JSON) and an ONNX model's files on disk."""
