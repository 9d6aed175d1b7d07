"""What can run: the style catalogue, job requests built from styles, own settings or recipes, presets and
recipes, and the settings a form can load."""
