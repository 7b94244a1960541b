"""Images: the live ISO and the installed disk made from repository packages, their file
systems built without mounting, and the disk layout that cos-installer and cos-upgrade share."""
