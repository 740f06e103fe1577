"""Structure generation: target compositions, WGAN-GP point-cloud generator, templates."""
