"""The reliability and security suite of hyperion-vault (issue 8): `python -m reliability --help`.
Importing it does nothing; see README.md."""
