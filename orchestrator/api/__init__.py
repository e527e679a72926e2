"""Everything that talks HTTP as a client: session, signing, credentials and IAM, EVS calls, routes.

The only package that imports aiohttp's client; modules are imported where used so that ``--help``
and a dry run never load aiohttp.
"""
