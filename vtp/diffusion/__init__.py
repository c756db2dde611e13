"""Flow matching for the DiT on tokenizer latents: the path and its loss (`flow`) and the ODE samplers with
classifier-free guidance (`samplers`). Pure math; the model is `vtp.models.dit`, the trainer lives in
`vtp.train`.

Time convention (SiT / LightningDiT): t = 0 is noise, t = 1 is data, x_t = t * data + (1 - t) * noise, and
the model predicts the velocity data - noise. Sampling integrates t from 0 to 1.
"""
