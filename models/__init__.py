"""Models: ResNet backbones, the CSRA head, the registry and weight loading."""
