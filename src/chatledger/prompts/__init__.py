"""The prompt library: templates (chat messages with `{{variable}}` placeholders,
declared variables with defaults, model settings) in immutable versions with movable
labels, the built-ins every project can use, and rendering them."""
