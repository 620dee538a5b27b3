"""Front ends that only translate: the command line (cli, evaluate), the web app."""
