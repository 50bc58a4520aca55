"""Style presets as data, one JSON file each: name, description, positive (with {prompt}), negative.
A user adds or overrides a preset by placing NAME.json in $IMAGENT_HOME/prompts/styles/."""
