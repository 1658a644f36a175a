# ruff: noqa: RUF001  (Japanese text uses full-width question marks)
"""Writes ``adversarial_paraphrases.jsonl``: English and Japanese questions, each with a
paraphrase (same meaning, same answer) paired with a hard negative (nearly the same
words, another answer: a swapped unit or currency, another number, an opposite, a
reversed or flipped comparison, an added negation, another entity).

Provenance: hand-written templates and fillers by the onion maintainers (no external
corpus), expanded deterministically here. The guards' word lists
(``middlewares/cache/precision_lexicon.py``) were written before this set, and the
paraphrases deliberately use words they do not list (quicker, purchase, 危なくない…).
A negative that is another row's stored question spelled otherwise (8人分 for that row's
八人分) names it in ``negative_same_as``: it has that question's answer.
``split`` is ``tune`` for about a third of the stored questions (by a CRC-32 of the
text) and ``heldout`` for the rest, so no stored question is in both: the benchmark
reports the held-out rows; only ``tune`` rows may be looked at while choosing
parameters.

    python benchmarks/data/make_adversarial_paraphrases.py
"""

from __future__ import annotations

import json
import random
import zlib
from pathlib import Path

OUT = Path(__file__).with_name("adversarial_paraphrases.jsonl")

UNITS_EN = [("km", "miles"), ("kilograms", "pounds"), ("liters", "gallons"), ("meters", "feet"), ("inches", "cm")]
UNITS_EN += [("ounces", "grams"), ("MB", "Mb"), ("GB", "MB"), ("hours", "minutes"), ("cups", "ml")]
CURRENCIES_EN = ["dollars", "euros", "yen", "pounds", "Swiss francs", "rupees", "yuan", "won"]
COUNTRIES_EN = ["France", "Germany", "Japan", "Canada", "Brazil", "Italy", "Spain", "India", "Mexico", "Egypt"]
COUNTRIES_EN += ["Kenya", "Norway", "Sweden", "Peru", "Chile", "Vietnam", "Turkey", "Poland"]
ACTS_EN = ["eat raw eggs", "swim after eating", "drink tap water", "leave a phone charging overnight"]
ACTS_EN += ["use a microwave with metal", "take ibuprofen with coffee", "run in the heat", "eat raw salmon"]
LAW_EN = ["fly a drone in the city", "drive with headphones", "collect rainwater", "own a pet fox"]
LAW_EN += ["carry pepper spray", "camp on the beach", "jaywalk", "record a phone call"]
THINGS_EN = ["Python", "Java", "Rust", "Go", "PostgreSQL", "MySQL", "Redis", "SQLite", "React", "Vue"]
FOODS_EN = ["bread", "oatmeal", "soy sauce", "beer", "rice", "pasta", "corn flakes", "miso soup"]
METRICS_EN = ["credit score", "heart rate", "website traffic", "battery life", "running speed", "blood sugar"]
ASSETS_EN = ["gold", "Bitcoin", "index funds", "a house", "a used car", "airline tickets"]
OSES_EN = ["Windows", "macOS", "Ubuntu", "Fedora", "Android", "iOS"]
PKGS_EN = ["Docker", "Node.js", "Git", "VS Code", "Steam", "Zoom"]
TOPICS_EN = ["remote work", "nuclear power", "electric cars", "homeschooling", "solar panels", "microservices"]

UNITS_JA = [("キロ", "マイル"), ("キログラム", "ポンド"), ("リットル", "ガロン"), ("メートル", "フィート")]
UNITS_JA += [("インチ", "センチ"), ("メガバイト", "ギガバイト"), ("時間", "分"), ("グラム", "オンス")]
CURRENCIES_JA = ["ドル", "ユーロ", "円", "ポンド", "人民元", "ウォン", "ルピー"]
COUNTRIES_JA = ["フランス", "ドイツ", "イタリア", "スペイン", "カナダ", "ブラジル", "インド", "メキシコ", "エジプト"]
COUNTRIES_JA += ["ケニア", "ノルウェー", "スウェーデン", "ペルー", "チリ", "ベトナム", "トルコ", "ポーランド"]
CITIES_JA = ["東京", "大阪", "京都", "札幌", "福岡", "名古屋", "横浜", "神戸", "仙台", "広島", "那覇", "金沢"]
FOODS_RAW_JA = ["卵", "鶏肉", "豚肉", "牡蠣", "サーモン", "きのこ", "じゃがいも", "もやし"]
LAW_JA = ["ドローンを飛ばす", "イヤホンをして自転車に乗る", "雨水を集める", "キツネを飼う", "通話を録音する"]
LAW_JA += ["海辺でキャンプする", "花火をする", "路上で演奏する"]
FOODS_JA = ["パン", "醤油", "ビール", "味噌", "うどん", "カレールー", "パスタ", "オートミール"]
METRICS_JA = ["筋肉量", "睡眠時間", "ウェブサイトのアクセス", "バッテリーの持ち", "貯金", "体力"]
ASSETS_JA = ["金", "ビットコイン", "株", "マンション", "中古車", "航空券"]
OSES_JA = ["Windows", "Mac", "Ubuntu", "Android", "iPhone"]
PKGS_JA = ["Docker", "Python", "Git", "Zoom", "Chrome"]
KANJI_NUMBERS = [
    ("二", 2),
    ("三", 3),
    ("四", 4),
    ("五", 5),
    ("六", 6),
    ("八", 8),
    ("十", 10),
    ("十二", 12),
    ("二十", 20),
]


def other(r: random.Random, pool: list, value: object) -> object:
    return r.choice([v for v in pool if v != value])


def en_families(r: random.Random) -> list[tuple[str, list[tuple[str, str, str, str]]]]:
    """``(family, [(stored, paraphrase, negative, kind), ...])`` for English."""
    fams: dict[str, list[tuple[str, str, str, str]]] = {
        k: []
        for k in [
            "unit",
            "currency",
            "capital",
            "safety",
            "legal",
            "comparative",
            "gluten",
            "calories",
            "install",
            "proscons",
            "increase",
            "buy",
            "population",
            "download",
        ]
    }
    for u1, u2 in UNITS_EN:
        for n in r.sample(range(2, 500), 4):
            p = r.choice(
                [f"Convert {n} {u1} to {u2}.", f"What is {n} {u1} in {u2}?", f"{n} {u1} equals how many {u2}?"]
            )
            fams["unit"].append((f"How many {u2} is {n} {u1}?", p, f"How many {u1} is {n} {u2}?", "unit"))
            fams["unit"].append(
                (f"How many {u2} is {n} {u1}?", p, f"How many {u2} is {n + r.randint(1, 9)} {u1}?", "number")
            )
    for c1 in CURRENCIES_EN:
        for n in r.sample([1, 5, 10, 20, 50, 100, 250, 1000], 4):
            c2 = other(r, CURRENCIES_EN, c1)
            c3 = other(r, [c for c in CURRENCIES_EN if c != c2], c1)
            p = r.choice(
                [f"Convert {n} {c1} to {c2}.", f"What are {n} {c1} worth in {c2}?", f"{n} {c1} in {c2}, please"]
            )
            fams["currency"].append((f"How much is {n} {c1} in {c2}?", p, f"How much is {n} {c3} in {c2}?", "currency"))
    for x in COUNTRIES_EN:
        y = other(r, COUNTRIES_EN, x)
        p = r.choice([f"Which city is the capital of {x}?", f"Tell me {x}'s capital city.", f"capital city of {x}?"])
        fams["capital"].append((f"What is the capital of {x}?", p, f"What is the capital of {y}?", "entity"))
        p = r.choice(
            [f"How many people live in {x}?", f"What's the population of {x} today?", f"{x}: how many inhabitants?"]
        )
        fams["population"].append((f"What is the population of {x}?", p, f"What is the population of {y}?", "entity"))
    for act in ACTS_EN:
        ing = act.split()[0] + ("ing" if not act.split()[0].endswith("e") else "")
        ing = (
            {
                "eat": "eating",
                "swim": "swimming",
                "drink": "drinking",
                "leave": "leaving",
                "use": "using",
                "take": "taking",
                "run": "running",
            }[act.split()[0]]
            + " "
            + " ".join(act.split()[1:])
        )
        for p, n, kind in [
            (f"Is {ing} safe?", f"Is it dangerous to {act}?", "antonym"),
            (f"Can I safely {act}?", f"Is it unsafe to {act}?", "antonym"),
            (f"Is it OK to {act}?", f"Is it not safe to {act}?", "negation"),
            (f"Is {ing} risk-free?", f"Why is it unsafe to {act}?", "antonym"),
        ]:
            fams["safety"].append((f"Is it safe to {act}?", p, n, kind))
    for act in LAW_EN:
        for x in r.sample(COUNTRIES_EN, 3):
            p = r.choice(
                [f"Is it allowed to {act} in {x}?", f"Can I legally {act} in {x}?", f"In {x}, is it legal to {act}?"]
            )
            n, kind = r.choice(
                [
                    (f"Is it illegal to {act} in {x}?", "antonym"),
                    (f"Is it legal to {act} in {other(r, COUNTRIES_EN, x)}?", "entity"),
                ]
            )
            fams["legal"].append((f"Is it legal to {act} in {x}?", p, n, kind))
    for a in THINGS_EN:
        for b in r.sample([t for t in THINGS_EN if t != a], 3):
            p = r.choice(
                [f"Is {a} quicker than {b}?", f"Does {a} run faster than {b}?", f"Compared with {b}, is {a} faster?"]
            )
            n, kind = r.choice(
                [(f"Is {b} faster than {a}?", "comparative"), (f"Is {a} slower than {b}?", "comparative")]
            )
            fams["comparative"].append((f"Is {a} faster than {b}?", p, n, kind))
    for food in FOODS_EN:
        for p, n in [
            (f"Is there gluten in {food}?", f"Does {food} not contain gluten?"),
            (f"Does {food} have gluten in it?", f"Why doesn't {food} contain gluten?"),
            (f"Is {food} made with gluten?", f"Does {food} never contain gluten?"),
        ]:
            fams["gluten"].append((f"Does {food} contain gluten?", p, n, "negation"))
    for food in ["boiled eggs", "bananas", "apples", "slices of bread", "almonds", "cups of rice"]:
        for n in r.sample(range(2, 12), 4):
            p = r.choice(
                [
                    f"What's the calorie count of {n} {food}?",
                    f"{n} {food}: how many calories?",
                    f"Calories in {n} {food}?",
                ]
            )
            fams["calories"].append(
                (
                    f"How many calories are in {n} {food}?",
                    p,
                    f"How many calories are in {n + r.randint(1, 5)} {food}?",
                    "number",
                )
            )
    for pkg in PKGS_EN:
        for o in r.sample(OSES_EN, 3):
            p = r.choice(
                [
                    f"What are the steps to install {pkg} on {o}?",
                    f"Installing {pkg} on {o}: how?",
                    f"How can I set up {pkg} on {o}?",
                ]
            )
            fams["install"].append(
                (f"How do I install {pkg} on {o}?", p, f"How do I install {pkg} on {other(r, OSES_EN, o)}?", "entity")
            )
    for t in TOPICS_EN:
        for p, n in [
            (f"What are the benefits of {t}?", f"What are the disadvantages of {t}?"),
            (f"What are the pros of {t}?", f"What are the drawbacks of {t}?"),
            (f"Why is {t} good?", f"What are the downsides of {t}?"),
        ]:
            fams["proscons"].append((f"What are the advantages of {t}?", p, n, "antonym"))
    for m in METRICS_EN:
        for p, n in [
            (f"What are ways to raise my {m}?", f"How can I decrease my {m}?"),
            (f"How do I improve my {m}?", f"How can I lower my {m}?"),
            (f"Tips to boost my {m}?", f"How can I reduce my {m}?"),
        ]:
            fams["increase"].append((f"How can I increase my {m}?", p, n, "antonym"))
    for a in ASSETS_EN:
        for p, n in [
            (f"What's the best moment to purchase {a}?", f"When is the best time to sell {a}?"),
            (f"When should I buy {a}?", f"When is the worst time to buy {a}?"),
            (f"Best time of year to buy {a}?", f"When is the best time to sell {a}?"),
        ]:
            fams["buy"].append((f"When is the best time to buy {a}?", p, n, "antonym"))
    for n in [10, 50, 100, 250, 500, 700]:
        for m in r.sample([10, 20, 50, 100, 300], 3):
            p = r.choice(
                [
                    f"At {m} Mbps, how long does a {n} MB download take?",
                    f"Download time for a {n} MB file on a {m} Mbps line?",
                ]
            )
            neg, kind = r.choice(
                [
                    (f"How long does it take to download a {n} Mb file at {m} Mbps?", "unit"),
                    (f"How long does it take to download a {n} MB file at {m} MBps?", "unit"),
                    (f"How long does it take to download a {n + 10} MB file at {m} Mbps?", "number"),
                ]
            )
            fams["download"].append((f"How long does it take to download a {n} MB file at {m} Mbps?", p, neg, kind))
    return list(fams.items())


def ja_families(r: random.Random, same_as: dict[str, str]) -> list[tuple[str, list[tuple[str, str, str, str]]]]:
    """The same kinds of pairs in Japanese; ``same_as`` gets each negative that is another
    row's stored question spelled otherwise, mapped to that question."""
    fams: dict[str, list[tuple[str, str, str, str]]] = {
        k: []
        for k in [
            "unit",
            "currency",
            "capital",
            "weather",
            "safety",
            "legal",
            "servings",
            "gluten",
            "comparative",
            "increase",
            "buy",
            "install",
            "population",
            "age",
        ]
    }
    for u1, u2 in UNITS_JA:
        for n in r.sample(range(2, 500), 5):
            p = r.choice([f"{n}{u1}を{u2}に換算すると？", f"{n}{u1}って何{u2}？", f"{n}{u1}は{u2}でいうとどれくらい？"])
            fams["unit"].append((f"{n}{u1}は何{u2}ですか？", p, f"{n}{u2}は何{u1}ですか？", "unit"))
            fams["unit"].append((f"{n}{u1}は何{u2}ですか？", p, f"{n + r.randint(1, 9)}{u1}は何{u2}ですか？", "number"))
    for c1 in CURRENCIES_JA:
        for n in r.sample([1, 5, 10, 20, 50, 100, 1000], 4):
            c2 = other(r, CURRENCIES_JA, c1)
            c3 = other(r, [c for c in CURRENCIES_JA if c != c2], c1)
            p = r.choice(
                [f"{n}{c1}を{c2}に両替するといくら？", f"{n}{c1}は{c2}でいくらになりますか？", f"{n}{c1}って何{c2}？"]
            )
            fams["currency"].append((f"{n}{c1}は何{c2}ですか？", p, f"{n}{c3}は何{c2}ですか？", "currency"))
    for x in COUNTRIES_JA:
        y = other(r, COUNTRIES_JA, x)
        p = r.choice([f"{x}の首都を教えてください", f"{x}の首都ってどこ？", f"{x}の首都はどの都市ですか？"])
        fams["capital"].append((f"{x}の首都はどこですか？", p, f"{y}の首都はどこですか？", "entity"))
        p = r.choice([f"{x}には何人住んでいますか？", f"{x}の人口を教えて", f"{x}の人口はどのくらい？"])
        fams["population"].append((f"{x}の人口は？", p, f"{y}の人口は？", "entity"))
    for c in CITIES_JA:
        p = r.choice([f"明日の{c}の天気を教えて", f"{c}、明日の天気はどう？", f"明日{c}は晴れますか？"])
        fams["weather"].append((f"{c}の明日の天気は？", p, f"{other(r, CITIES_JA, c)}の明日の天気は？", "entity"))
    for f in FOODS_RAW_JA:
        for p, n, kind in [
            (f"{f}は生で食べても大丈夫ですか？", f"{f}を生で食べるのは危険ですか？", "antonym"),
            (f"生の{f}を食べても安全？", f"{f}を生で食べるのは安全ではないですか？", "negation"),
            (f"{f}を生で食べても問題ない？", f"{f}を生で食べてはいけない理由は？", "negation"),
        ]:
            fams["safety"].append((f"{f}を生で食べるのは安全ですか？", p, n, kind))
    for act in LAW_JA:
        for x in r.sample(["日本", "アメリカ", "フランス", "ドイツ", "カナダ"], 3):
            p = r.choice(
                [
                    f"{x}で{act}ことは法律で認められていますか？",
                    f"{x}では{act}のは合法？",
                    f"{x}で{act}のは許可されていますか？",
                ]
            )
            n, kind = r.choice(
                [
                    (f"{x}で{act}のは違法ですか？", "antonym"),
                    (
                        f"{other(r, ['日本', 'アメリカ', 'フランス', 'ドイツ', 'カナダ'], x)}で{act}のは合法ですか？",
                        "entity",
                    ),
                ]
            )
            fams["legal"].append((f"{x}で{act}のは合法ですか？", p, n, kind))
    kanji_of = {n: kanji for kanji, n in KANJI_NUMBERS}
    for dish in ["カレー", "肉じゃが", "味噌汁", "ハンバーグ"]:
        for kanji, n in KANJI_NUMBERS:
            other_n = other(r, [v for _, v in KANJI_NUMBERS], n)
            p = r.choice([f"{dish}を{n}人分作るのに必要な材料は？", f"{n}人前の{dish}の材料を教えて"])
            negative = f"{other_n}人分の{dish}の材料は？"
            fams["servings"].append((f"{kanji}人分の{dish}の材料は？", p, negative, "number"))
            # The negative, in digits, is the question another row stores in kanji
            # (8人分 is 八人分): it has that row's answer, not an answer of its own.
            same_as[negative] = f"{kanji_of[other_n]}人分の{dish}の材料は？"
    for food in FOODS_JA:
        for p, n in [
            (f"{food}にグルテンは入っていますか？", f"{food}にはグルテンが含まれていませんか？"),
            (f"{food}ってグルテンを含む？", f"{food}にグルテンが入っていないのはなぜ？"),
        ]:
            fams["gluten"].append((f"{food}にはグルテンが含まれていますか？", p, n, "negation"))
    things = ["Python", "Java", "Rust", "Go", "新幹線", "飛行機", "光回線", "ADSL"]
    for a in things:
        for b in r.sample([t for t in things if t != a], 3):
            p = r.choice([f"{a}の方が{b}より速いですか？", f"{b}と比べて{a}は速い？", f"{a}は{b}より高速ですか？"])
            n, kind = r.choice(
                [(f"{b}は{a}より速いですか？", "comparative"), (f"{a}は{b}より遅いですか？", "comparative")]
            )
            fams["comparative"].append((f"{a}は{b}より速いですか？", p, n, kind))
    for m in METRICS_JA:
        for p, n in [
            (f"どうすれば{m}を増やせますか？", f"{m}を減らす方法は？"),
            (f"{m}を増やすコツは？", f"{m}を減らすにはどうすればいい？"),
        ]:
            fams["increase"].append((f"{m}を増やす方法は？", p, n, "antonym"))
    for a in ASSETS_JA:
        for p, n in [
            (f"{a}はいつ買うのがいいですか？", f"{a}を売るのに良い時期はいつですか？"),
            (f"{a}を買うならいつがおすすめ？", f"{a}を売るならいつがいい？"),
        ]:
            fams["buy"].append((f"{a}を買うのに良い時期はいつですか？", p, n, "antonym"))
    for pkg in PKGS_JA:
        for o in r.sample(OSES_JA, 3):
            p = r.choice(
                [
                    f"{pkg}を{o}に入れる手順を教えて",
                    f"{o}で{pkg}をインストールするには？",
                    f"{o}への{pkg}のインストール方法は？",
                ]
            )
            fams["install"].append(
                (
                    f"{o}に{pkg}をインストールする方法は？",
                    p,
                    f"{other(r, OSES_JA, o)}に{pkg}をインストールする方法は？",
                    "entity",
                )
            )
    for kanji, n in [("二十", 20), ("二十五", 25), ("三十", 30), ("三十五", 35), ("四十", 40), ("五十", 50)]:
        for job in ["エンジニア", "看護師", "教師", "会社員"]:
            other_k = other(r, ["二十", "二十五", "三十", "三十五", "四十", "五十"], kanji)
            p = r.choice([f"{n}歳の{job}の平均年収はいくら？", f"{kanji}歳の{job}は平均でどれくらい稼ぎますか？"])
            fams["age"].append((f"{kanji}歳の{job}の平均年収は？", p, f"{other_k}歳の{job}の平均年収は？", "number"))
    return list(fams.items())


def main() -> None:
    r = random.Random(18)
    rows = []
    same_as: dict[str, str] = {}
    for lang, families in (("en", en_families(r)), ("ja", ja_families(r, same_as))):
        for family, pairs in families:
            for stored, paraphrase, negative, kind in pairs:
                split = "tune" if zlib.crc32(stored.encode()) % 3 == 0 else "heldout"
                row = {
                    "id": len(rows),
                    "lang": lang,
                    "family": family,
                    "split": split,
                    "stored": stored,
                    "paraphrase": paraphrase,
                    "negative": negative,
                    "kind": kind,
                }
                if negative in same_as:
                    row["negative_same_as"] = same_as[negative]
                rows.append(row)
    stored_questions = {row["stored"] for row in rows}
    if missing := {same for same in same_as.values() if same not in stored_questions}:
        raise SystemExit(f"negative_same_as names questions no row stores: {sorted(missing)}")
    OUT.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    print(f"wrote {len(rows)} pairs to {OUT}")


if __name__ == "__main__":
    main()
