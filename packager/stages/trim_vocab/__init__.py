"""``trim_vocab``: drop the token ids the data never uses from the embedding matrix and the tokenizer
(``stage``: the spec and its registration; ``algorithm``: the trimming)."""
