"""Networks: plain ``nn.Module`` classes that need only torch."""
