"""The Trello board the Monkey works from: the py-trello adapter, plan import, card format,
webhook signatures. Kept import-light: workflows import only `factorylm.models.monkey`."""
