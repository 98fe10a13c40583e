"""Torch network definitions for the GHOST engine (AEI-Net generator, ArcFace IResNet).

Kept in their own subpackage so that only the engine imports torch, and only
when a GHOST model is actually used; nothing here is imported at CLI start-up.
"""
