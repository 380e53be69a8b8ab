"""The only code that does I/O: kube, ssh, watch, process."""
