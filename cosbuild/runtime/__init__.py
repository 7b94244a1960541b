"""The runtime, code that runs inside the OS: the cloud-config schema (also checked at build
time), the cos-setup stage runner, cos-upgrade and cos-installer. Importing it stays light:
no Jinja2, doit, sh or pycdlib."""
