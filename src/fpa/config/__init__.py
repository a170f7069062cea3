"""The config: composition, resolvers, building typed nodes, cross-field rules, stage cache keys."""
