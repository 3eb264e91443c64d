"""Local HTTP servers that speak hosted APIs (Anthropic Messages, Gemini generateContent), so
the official clients are tested at the HTTP boundary, with no network."""
