"""The dataset card and its plots, written by pack from the shards as written:

  readme.py    dataset/README.md, the Hugging Face card (loader configs, counts, credits)
  page.py      dataset/card.html, the page people look at, and the summary every view reads
  figures.py   its heat maps, histograms and contact sheets, drawn without a plotting library
  plots.py     reports/pack_plots/, the same summary as DVC plots
  command.py   `g4g card`, which rewrites card.html from a dataset folder alone
"""
