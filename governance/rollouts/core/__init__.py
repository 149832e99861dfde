"""The rollout cores: plain Python over plain records, no Django import (tests/test_import_rules.py)."""
