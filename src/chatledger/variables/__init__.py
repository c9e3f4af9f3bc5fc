"""Scoped variables: values kept at user, org and project scope that fill a prompt's
`{{placeholders}}`, and the rules that resolve them for one render."""
