"""Compression recipes: the YAML's schema and loader (``spec``), its search space (``search_space``), bucket
layouts (``buckets``), command-line overrides (``flags``) and the run that trains the stages and packs
(``run``)."""
