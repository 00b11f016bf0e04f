"""The signing core: CA keys, user-key vetting, certificates, principal naming and KRLs.

This package imports no Flask, no database and no other part of sshca.
"""
