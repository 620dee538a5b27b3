"""``faceanon evaluate``'s library: the data (``datasets``), what is compared (``methods``), the
protocols run on them (``protocols``, ``linkage``, the learned reconstruction ``attack``), the
recognizers and metrics they use, and the report (``report``)."""
