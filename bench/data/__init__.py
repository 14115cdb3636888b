"""LightningDataModules, one file per source; each exposes a DataSpec."""
