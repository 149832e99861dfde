"""The SLO core: SLIs counted per minute, error budgets and burn rates, alert states, silences,
OpenSLO. Plain Python with no Django import, so the rollup stage, the evaluation tick, the
pages and the tests share one implementation and its tests run in milliseconds."""
