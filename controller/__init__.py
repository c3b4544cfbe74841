"""mizzen-controller: the control plane (istiod replacement). Built by the control-plane issue."""
