"""snapcat: suggests a listing's category from its photo."""
