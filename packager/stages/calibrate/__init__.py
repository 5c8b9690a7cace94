"""``calibrate``: one class's logit bias fit on the validation split (``stage``: the spec and its registration;
``algorithm``: the fit and where the bias goes)."""
