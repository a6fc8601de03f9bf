"""Pure numerics: scaling-law fits, hardware Figure of Merit, reports and plots."""
