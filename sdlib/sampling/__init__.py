"""From noise to a latent: the noise schedule (``schedule``), DDIM (``ddim``), Euler and
DPM-Solver++ (``samplers``), LCM (``lcm``), each as per-step coefficients in numpy and one update in
``keras.ops``. Imports nothing of sdlib's models or loaders."""
