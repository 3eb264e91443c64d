"""Photo intake: validating images, the photo store, Gemini/Claude vision. See docs/photos.md.

Importing this package imports nothing heavy: workflows import `factorylm.models.photos`.
"""
