"""Column names of the competition files. The 30 target names are written here and nowhere else."""

ID = "qa_id"
TITLE, BODY, ANSWER = "question_title", "question_body", "answer"
TEXT_COLUMNS = (TITLE, BODY, ANSWER)
# test.csv columns, in file order (train.csv = these + TARGETS).
INPUT_COLUMNS = (
    ID, TITLE, BODY, "question_user_name", "question_user_page", ANSWER,
    "answer_user_name", "answer_user_page", "url", "category", "host",
)
TARGETS = (
    "question_asker_intent_understanding", "question_body_critical", "question_conversational",
    "question_expect_short_answer", "question_fact_seeking", "question_has_commonly_accepted_answer",
    "question_interestingness_others", "question_interestingness_self", "question_multi_intent",
    "question_not_really_a_question", "question_opinion_seeking", "question_type_choice",
    "question_type_compare", "question_type_consequence", "question_type_definition",
    "question_type_entity", "question_type_instructions", "question_type_procedure",
    "question_type_reason_explanation", "question_type_spelling", "question_well_written",
    "answer_helpful", "answer_level_of_information", "answer_plausible", "answer_relevance",
    "answer_satisfaction", "answer_type_instructions", "answer_type_procedure",
    "answer_type_reason_explanation", "answer_well_written",
)
QUESTION_TARGETS = tuple(t for t in TARGETS if t.startswith("question_"))
ANSWER_TARGETS = tuple(t for t in TARGETS if t.startswith("answer_"))
TRAIN_COLUMNS = INPUT_COLUMNS + TARGETS
SUBMISSION_COLUMNS = (ID,) + TARGETS
# The five StackExchange site groups of the `category` column (side feature; anything else is "unseen").
CATEGORIES = ("CULTURE", "LIFE_ARTS", "SCIENCE", "STACKOVERFLOW", "TECHNOLOGY")
