"""Plans over time: forecasts, migration from the placement served now, replay, strategy comparison."""
