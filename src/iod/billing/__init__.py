"""Money (issue 15): the price book, the customer catalog, quotes, metering, statements."""
