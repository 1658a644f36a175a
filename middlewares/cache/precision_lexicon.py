"""Word lists of the semantic cache's precision guards: units, currencies and
opposites, in English and Japanese.

Each list maps a surface form to a canonical name, so "km", "kilometres" and "キロメートル"
are one unit and "$", "USD", "dollars" and "ドル" one currency. Opposites map a word to
``(axis, pole)``: "legal" is ``("legal", 1)``, "illegal" ``("legal", -1)``; two texts that
use the same axis with different poles mean different things. Comparatives are
opposites too ("more"/"less", "faster"/"slower", "より高い"/"より安い").
"""

from __future__ import annotations

import re

__all__ = [
    "CURRENCIES",
    "EXCLUSIVE_AXES",
    "VERDICT_AXIS",
    "JA_OPPOSITES",
    "JA_UNITS",
    "OPPOSITES",
    "SYMBOL_CURRENCIES",
    "UNITS",
    "UNITS_CASED",
]


def _table(spec: str) -> dict[str, str]:
    """``"canon: form form; canon2: form"`` -> ``{form: canon}`` (the canon is a form too)."""
    table: dict[str, str] = {}
    for group in spec.split(";"):
        canon, _, forms = group.partition(":")
        canon = canon.strip()
        for form in (canon, *forms.split()):
            table[form] = canon
    return table


UNITS = _table(
    "km: kilometer kilometers kilometre kilometres kms; mile: miles mi; meter: meters metre metres m;"
    "cm: centimeter centimeters centimetre centimetres; mm: millimeter millimeters millimetre millimetres;"
    "inch: inches in; foot: feet ft; yard: yards yd; kg: kilogram kilograms kilo kilos kgs;"
    "gram: grams g; pound_mass: lb lbs pounds_weight; ounce: ounces oz; liter: liters litre litres l;"
    "ml: milliliter milliliters millilitre millilitres; gallon: gallons gal; cup: cups; tablespoon: tablespoons tbsp;"
    "teaspoon: teaspoons tsp; celsius: °c centigrade; fahrenheit: °f; kelvin: k; mph: ; kph: kmh km/h;"
    "second: seconds sec secs; minute: minutes min mins; hour: hours hr hrs; day: days; week: weeks;"
    "month: months; year: years yr yrs; calorie: calories kcal; joule: joules; watt: watts w; kwh: ;"
    "byte: bytes; bit: bits; percent: % percentage"
)
# Case decides these: MB is megabytes, Mb megabits.
UNITS_CASED = _table(
    "kilobyte: KB kB kilobyte kilobytes; megabyte: MB megabyte megabytes; gigabyte: GB gigabyte gigabytes;"
    "terabyte: TB terabyte terabytes; kilobit: Kb kbit kilobit kilobits; megabit: Mb Mbit megabit megabits;"
    "gigabit: Gb Gbit gigabit gigabits; mbps: Mbps; gbps: Gbps; kbps: kbps"
)
CURRENCIES = _table(
    "usd: dollar dollars buck bucks; eur: euro euros; gbp: sterling quid; jpy: yen; cny: yuan renminbi rmb;"
    "krw: won; inr: rupee rupees; chf: franc francs; btc: bitcoin bitcoins; eth: ether ethereum"
)
# "pound(s)" is a currency or a weight; it counts as a currency unless a unit word is near.
CURRENCIES["pound"] = CURRENCIES["pounds"] = "gbp"
SYMBOL_CURRENCIES = {"$": "usd", "€": "eur", "£": "gbp", "¥": "jpy", "₩": "krw", "₹": "inr", "₿": "btc"}


def _opposites(spec: str) -> dict[str, tuple[str, int]]:
    """``"a/b c/d"`` -> a and c on the positive pole of their axes, b and d negative."""
    table: dict[str, tuple[str, int]] = {}
    for pair in spec.split():
        plus, minus = pair.split("/")
        for word in plus.split(","):
            table[word] = (pair, 1)
        for word in minus.split(","):
            table[word] = (pair, -1)
    return table


OPPOSITES = _opposites(
    "legal,legally,lawful,allowed,permitted/illegal,illegally,unlawful,forbidden,banned,prohibited "
    "safe,safely,safety,risk-free,harmless/unsafe,dangerous,unsafely,"
    "risky,harmful "
    "install,installing/uninstall,uninstalling "
    "possible/impossible true/false correct,right/wrong,incorrect hot,hotter,hottest/cold,colder,coldest "
    "warm,warmer/cool,cooler buy,buying/sell,selling "
    "increase,increasing,raise/decrease,decreasing,lower,reduce cheap,cheaper,cheapest/expensive,pricier "
    "before/after up,upward/down,downward maximum,max/minimum,min best/worst better/worse "
    "advantages,pros,benefits,upsides/disadvantages,cons,drawbacks,downsides "
    "open,opening/close,closing start,begin/stop,end "
    "win,winning/lose,losing add,adding/remove,removing,delete enable,enabling/disable,disabling "
    "import,importing/export,exporting upload,uploading/download,downloading encrypt/decrypt "
    "encode,encoding/decode,decoding north,northern/south,southern east,eastern/west,western "
    "more/less,fewer larger,bigger,largest,biggest/smaller,smallest higher,highest/lowest "
    "faster,fastest/slower,slowest "
    "older,oldest/younger,youngest longer,longest/shorter,shortest heavier/lighter strong,stronger/weak,weaker "
    "healthy,healthier/unhealthy input/output inside/outside above/below push/pull "
    "include,including/exclude,excluding accept/reject "
    "ascending/descending first/last min_to_max/max_to_min vegetarian/meat"
)
# Japanese has no spaces: these are matched as substrings, longest first. Set phrases
# carry a pole too: 大丈夫 and 問題ない say "safe", 法律で認められ "legal" (and 許可
# / 禁止 are the legal axis: "allowed" and "forbidden" by a rule).
JA_OPPOSITES = _opposites(
    "合法,法律で認められ,法律上問題な,法的に問題な,許可,認められ/違法,非合法,法律違反,禁止 "
    "安全,大丈夫,問題な,問題ありません,問題はな/危険,危な,有害 "
    "インストール/アンインストール 無料,タダ/有料 "
    "てもいい,ても良い,てもよい,ても平気,ても構わない,てもかまわない/"
    "てはいけない,ちゃいけない,てはだめ,ちゃだめ,てはならない "
    "可能/不可能 正しい,正解/間違,誤り 暑い/寒い 熱い/冷たい "
    "買う,買い/売る,売り 増え,増や,増加/減り,減ら,減少 "
    "上げ,上が/下げ,下が 最大/最小 最高/最低 安い,安く/高い,高く 長所,メリット/短所,デメリット 開け,開く/閉め,閉じ "
    "始め,開始/終わ,終了 勝つ,勝ち/負け 追加/削除 有効/無効 輸入/輸出 アップロード/ダウンロード 暗号化/復号 北部/南部 "
    "多い,多く/少ない,少なく 大きい,大きく/小さい,小さく 速い,早い,高速/遅い,低速 新しい/古い "
    "長い/短い 重い/軽い 強い/弱い 太い,太く/細い,細く 太る,太り,太っ/痩せ,やせ 明るい,明るく/暗い,暗く "
    "食べるべき,飲むべき,摂るべき,取るべき/避けるべき,控えるべき "
    "入力/出力 以上/以下 含め,含む/除い,除く 昇順/降順 最初/最後"
)
JA_UNITS = _table(
    "km: キロメートル キロ; mile: マイル; meter: メートル; cm: センチメートル センチ; mm: ミリメートル ミリ;"
    "inch: インチ; foot: フィート; kg: キログラム キロg; gram: グラム; pound_mass: ポンド重; ounce: オンス;"
    "liter: リットル; gallon: ガロン; celsius: 摂氏 ℃; fahrenheit: 華氏 ℉; second: 秒; minute: 分間 分; hour: 時間;"
    "day: 日間; week: 週間; month: か月 ヶ月 カ月; year: 年間; calorie: カロリー キロカロリー; byte: バイト;"
    "megabyte: メガバイト; gigabyte: ギガバイト; megabit: メガビット; percent: パーセント 割"
)
JA_CURRENCIES = _table("usd: ドル 米ドル; eur: ユーロ; gbp: ポンド; jpy: 円; cny: 人民元 元; krw: ウォン; inr: ルピー")
JA_UNITS.update({form: canon for form, canon in JA_CURRENCIES.items()})


def alternation(forms: list[str]) -> re.Pattern[str]:
    """One regex matching any of ``forms``, longest first (so キロメートル wins over キロ)."""
    return re.compile("|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True)))


# Axes of a verdict on an action: "is it safe to X" and "is it legal to X" ask different
# things, so two texts that each judge on one of these axes must share one.
EXCLUSIVE_AXES = frozenset(
    table[word][0]
    for table, words in ((OPPOSITES, ("safe", "legal")), (JA_OPPOSITES, ("安全", "合法")))
    for word in words
)
# "May I X" (してもいい) or "must I not X" (してはいけない): a verdict on no named axis, which
# no verdict of the other sign (危険, 違法) may answer.
VERDICT_AXIS = JA_OPPOSITES["てもいい"][0]
