"""Tables and sentences of numbers in README.md and docs/, generated from committed files.

A number a record holds is typed by no one: each table sits in a *generated block* of its
markdown file, delimited by HTML comments (:mod:`bench.doctables.blocks`), and a named generator
(:mod:`bench.doctables.registry`) renders the block's content from the committed records, encoder
cards and suite timing lines (:mod:`bench.doctables.sources`). ``bench docs --write`` rewrites the
blocks in place; ``bench docs --check`` fails, naming the file, the block and the first line that
differs, when a committed document disagrees with what the files give at its printed precision.
Scores, intervals and paired p-values are the leaderboard's own (``Entry.score``, ``Entry.ci``,
:func:`bench.leaderboard.ranking.compare`), so a document cannot disagree with the board.
"""
