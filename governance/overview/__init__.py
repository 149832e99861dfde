"""The project overview: one page that combines every app's figures (DESIGN: pages that combine apps
live in a layer above them). No models of its own: it reads the apps' selectors and a few indexed
aggregates, so it stays fast on a project with millions of spans."""
