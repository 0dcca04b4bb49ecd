"""Host configuration: the Ansible inventory of a stack and its run through ansible-runner."""
