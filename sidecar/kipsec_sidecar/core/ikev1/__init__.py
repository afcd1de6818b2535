"""IKEv1 (ISAKMP, RFC 2408 / 2409): the sans-IO wire and key layer.

Placeholder summary; the full API summary is written with the last module.
"""
