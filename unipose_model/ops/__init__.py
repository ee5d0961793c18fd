"""Operators of the network that have faster replacements on some devices."""
from .ms_deform_attn import (MSDeformAttn, ms_deform_attn_pytorch, get_deform_attn_impl,
                             register_deform_attn_impl, use_deform_attn_impl)

__all__ = ["MSDeformAttn", "ms_deform_attn_pytorch", "get_deform_attn_impl",
           "register_deform_attn_impl", "use_deform_attn_impl"]
