"""The arena: two models answer the same turns, a person votes, the votes become ratings.

- `ratings.py`: the pure math — Bradley–Terry (logistic regression, bootstrap intervals, ranks) and online Elo.
- `store.py`: battles, their two transcripts and the votes, in the sessions SQLite database.
- `battles.py`: which models may fight (downloaded and fitting) and picking an anonymous pair.
- `leaderboard.py`: votes + ratings + stored C-Eval/CMMLU scores as one table (web page and CLI).
- `cli.py`: `danlu leaderboard [--json]`.

As in Chatbot Arena (lm-sys/FastChat `fastchat/serve/monitor/`), only anonymous battles count for the ranking:
a vote cast while the names were visible is stored but not rated.
"""
