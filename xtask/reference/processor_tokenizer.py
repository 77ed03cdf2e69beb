"""tokenizer_ids.json: the tokenizer alone on the prompt corpus plus an extra Unicode/whitespace corpus."""

EXTRA_TEXTS = [
    "",
    " ",
    "  ",
    "\t",
    "\n",
    "a",
    " a",
    "a ",
    "  a  b  ",
    "a\tb\nc\rd\x0be\x0cf",
    "hello world",
    "Hello World HELLO",
    "▁ leading metaspace ▁▁ char",
    "_underscore_ and ▁",
    "ﬁ ﬂ ﬀ ﬃ ﬄ ﬅ ﬆ",
    "ＡＢＣ ａｂｃ ０１２ ！？",
    "　ideographic　space　",
    "①⑩⑳ ⅰⅱⅲ Ⅳ ㈱ ㍻ ㌔",
    "ｱｲｳｴｵ ｶﾞ ﾊﾟ",
    "x² x₂ ¼ ½ ¾",
    "… ‥ ‼ ⁇",
    "µ Ω K Å",
    "\u00a0\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000",
    "\u200b\u200c\u200d\u2060\ufeff",
    "\u00ad soft hyphen",
    "e\u0301 a\u0308 o\u0302 n\u0303",
    "한국어 텍스트",
    "中文文本测试",
    "日本語テキスト",
    "Русский текст",
    "ไทย ภาษา",
    "हिन्दी पाठ",
    "🐶🐱🐭🐹 👍🏽 🇫🇷",
    "\x00\x01\x02\x7f",
    "\ufffd replacement",
    "\U0001d400\U0001d401 math bold",
    "<grounding>",
    "<grounding><grounding>",
    "<phrase> a </phrase>",
    "a<patch_index_0005>b",
    "<s></s><pad><unk><mask>",
    "don't won't I'm you're they've it's",
    "a . b , c ! d ? e",
    "www.example.com/path?q=1&r=2",
    "C++ C# F# .NET node.js",
    "1234567890 3.14 -2e10 0x1F",
]


def tokenizer_cases(proc, prompt_cases):
    tok = proc.tokenizer
    texts = []
    seen = set()

    def push(t):
        if t not in seen:
            seen.add(t)
            texts.append(t)

    for c in prompt_cases:
        for t in [c["text"]] if isinstance(c["text"], str) else c["text"]:
            push(t)
        for t in c["expected"]["processed_text"]:
            if "<image>" not in t:
                push(t)
    for t in EXTRA_TEXTS:
        push(t)
    out = []
    for t in texts:
        ids = tok(t, add_special_tokens=False)["input_ids"]
        ids_sp = tok(t, add_special_tokens=True)["input_ids"]
        out.append({
            "text": t,
            "ids": [int(i) for i in ids],
            "ids_with_special": [int(i) for i in ids_sp],
            "tokens": tok.convert_ids_to_tokens(ids),
        })
    return out
