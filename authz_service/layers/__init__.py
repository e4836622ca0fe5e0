"""The layers of defense, one package each, in the order of DESIGN.md.

Only :mod:`authz_service.pipeline` knows the order; a layer only knows the
:class:`~authz_service.layers.base.Context` it reads from and adds to.
"""
