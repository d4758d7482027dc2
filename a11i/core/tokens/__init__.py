"""Token counting of request bodies: exact where OpenAI published the rules, estimated elsewhere.

The modules, one per section: ``encoding`` (the encodings a counter is handed, which model uses
which, text counted exactly in chunks), ``images`` (image sizes and OpenAI's image rules),
``openai_chat`` (OpenAI's chat accounting: messages, parts, tool calls and definitions),
``responses`` (Responses API input items), ``anthropic`` (the Anthropic estimate),
``plain_inputs`` (strings and token ids: embeddings inputs, legacy completions prompts) and
``counter`` (``TokenCounter``, which puts them together behind a per-message cache).

Pure: no file, network or environment access, no logging, no clock. The tiktoken encodings are
handed in already loaded (``a11i.sidecar.encodings.load_encodings``); without one, the counts fall
back to a character estimate and say so (``TokenCount.exact`` is False). The counter never
raises on odd input: the proxy validates bodies elsewhere, and whatever gets through is counted
by its JSON text rather than crashing the metering of a call.

What is exact (``TokenCount.exact`` True), and why:

* OpenAI chat messages made of ``role``, string ``content`` (or text parts), ``name`` and any
  other string field: tiktoken with the model's encoding plus OpenAI's published accounting
  (cookbook "How to count tokens with tiktoken", ``num_tokens_from_messages``): 3 tokens per
  message, 1 per ``name``, 3 to prime the reply. OpenAI verified these against the API for
  gpt-3.5-turbo, gpt-4, gpt-4o and gpt-4o-mini; newer models on ``o200k_base`` (gpt-4.1, gpt-5,
  the o-series) are assumed to keep the same chat format. Several text parts in one message are
  assumed to be concatenated.
* OpenAI tool and function definitions of the shape the cookbook verified
  (``num_tokens_for_tools``): a name, a description, and flat properties with a string ``type``,
  a ``description`` and optionally an ``enum`` of strings; ``required``, ``additionalProperties``
  and ``strict`` are ignored as the cookbook does. Constants: ``func_init`` 7 on o200k models and
  10 on cl100k models, ``prop_init`` 3, ``prop_key`` 3, ``enum_init`` -3, ``enum_item`` 3,
  ``func_end`` 12. The cookbook verified them with a system message present.
* Embeddings inputs and legacy completions prompts (gpt-3.5-turbo-instruct, davinci-002,
  babbage-002): the encoded length of every text, token-id inputs by their length. A
  completion's ``suffix`` makes its count an estimate.
* ``count_text``: the encoded length of a text, with no overhead.

What is an estimate (``exact`` False):

* Images (OpenAI's documented tile or patch formulas when the detail and the size are known from
  a data URL's header, else the model's low-detail cost), audio and files.
* Assistant ``tool_calls`` and legacy ``function_call`` (name + arguments + 3 per call),
  ``role: tool``/``function`` messages (every string field, ``tool_call_id`` included), a forced
  ``tool_choice``, nested or incomplete tool schemas (their extra JSON text), tools without a
  system message (+4, the implicit system message): OpenAI published no rules for these; the
  constants come from empirical work (hmarr/openai-chat-tokens) and err on the high side.
* Every OpenAI Responses API count (no published rules: the chat rules applied to the items).
* Every Anthropic count: Anthropic publishes no tokenizer. Text is counted with ``cl100k_base``
  and multiplied by ``ANTHROPIC_TEXT_FACTOR``; images use Anthropic's ``width*height/750``.
* Anything counted without its encoding: ``ceil(len(text) / 4)``, overheads kept.
"""
