"""Export stage: PyTorch modules written for capture, and their capture as ONNX graphs."""
