"""The Textual app: screens, widgets, bindings, themes. Talks to the engine facade only."""
