"""The gates as data: profiles (numbers), gate definitions (PromQL), generated rule files."""
