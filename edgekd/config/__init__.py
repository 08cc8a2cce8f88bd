"""What a user gives edgekd, validated: the recipe, target and budget schemas (``schema``), the target
model every backend reads (``target``), and the environment variables edgekd reads (``environment``)."""
