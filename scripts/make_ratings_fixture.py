"""Writes tests/fixtures/ratings-small.csv: a small log in MovieLens
`ratings.csv` format (userId,movieId,rating,timestamp in seconds), made up
and deterministic, for the CLI test of the whole loop (train, ingest, rank,
eval). Users have two favourite genres out of six; 20 movies per genre;
ratings of favourite-genre movies are mostly high, others mostly low; a
user rates in sessions, several ratings per second at times (as MovieLens
users do), so timestamps tie.

    python3 scripts/make_ratings_fixture.py
"""

import random

GENRES, PER_GENRE, USERS = 6, 20, 48

def main():
    rng = random.Random(20261203)
    rows = []
    for u in range(1, USERS + 1):
        likes = rng.sample(range(GENRES), 2)
        t = 1_500_000_000 + rng.randrange(0, 3_000_000)
        seen = set()
        for _ in range(rng.randrange(14, 40)):
            g = rng.choice(likes) if rng.random() < 0.7 else rng.randrange(GENRES)
            m = g * PER_GENRE + rng.randrange(PER_GENRE) + 1
            if m in seen:
                continue
            seen.add(m)
            if g in likes:
                r = rng.choice([3.5, 4.0, 4.5, 5.0, 5.0, 3.0])
            else:
                r = rng.choice([1.0, 2.0, 2.5, 3.0, 1.5, 4.0])
            rows.append((u, m * 7 + 3, r, t))
            t += rng.choice([0, 0, 1, 5, 60, 600, 86_400])
    with open("tests/fixtures/ratings-small.csv", "w") as f:
        f.write("userId,movieId,rating,timestamp\n")
        for u, m, r, t in rows:
            f.write(f"{u},{m},{r},{t}\n")

if __name__ == "__main__":
    main()
